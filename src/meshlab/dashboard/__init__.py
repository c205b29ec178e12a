"""meshlab.dashboard: `meshlab mesh dashboard`, the Mini-Mesh's traffic on a web page.

    prometheus   a Prometheus of the dashboard's own, scraping every sidecar through a relay
    graph        services and calls from Prometheus: rates, error ratio, p99, health
    server       the page (static/, vendored cytoscape and Chart.js), its JSON, the relay
"""
