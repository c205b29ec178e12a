"""meshlab.mesh: a service mesh from a manifest (`mesh.yaml`).

    manifest   the manifest read into dataclasses, and the names everything shares
"""
