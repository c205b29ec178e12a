"""`meshlab mesh render --k8s DIR`: the Mini-Mesh as Kubernetes manifests.

    meshlab mesh render --k8s build/k8s                    # labs/11-mini-mesh/mesh.yaml
    meshlab mesh render --k8s out --manifest my-mesh.yaml --image registry.example/meshlab:0.1.0
    kubectl apply -k build/k8s                             # on a cluster (docs/mini-mesh-on-kubernetes.md)
"""

from __future__ import annotations

from pathlib import Path

import click

from meshlab.ui import console

DEFAULT_MANIFEST = Path("labs/11-mini-mesh/mesh.yaml")


@click.command("render")
@click.option("--k8s", "folder", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Write Kubernetes manifests (and a kustomization.yaml) into this folder.")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"The mesh manifest [default: the course's {DEFAULT_MANIFEST}].")
@click.option("--image", metavar="IMAGE", help="The image of apps, sidecars and control plane "
                                               "[default: the course's toolbox image].")
def render_command(folder: Path, manifest_path: Path | None, image: str | None) -> None:
    """Render the mesh as Deployments, Services, ServiceAccounts and ConfigMaps.

    Each service version becomes a Deployment whose pod has the sidecar and the capture
    init container injected, as Istio's injector would; the control plane runs as a
    Deployment with its own ServiceAccount; sidecars are bootstrapped from ConfigMaps.
    Exit 2 when the manifest is not a valid one (its file and line).
    """
    from meshlab import k8s
    from meshlab.mesh import manifest

    if manifest_path is None:
        from meshlab.course import find_root

        manifest_path = find_root() / DEFAULT_MANIFEST
    mesh = manifest.load(manifest_path)
    # The control plane and the modules it imports from its folder (lab 11: faults.py).
    sources = {path.name: path.read_text(encoding="utf-8") for path in sorted(manifest_path.parent.glob("*.py"))}
    files = k8s.render(mesh, manifest_text=manifest_path.read_text(encoding="utf-8"),
                       control_plane_sources=sources, image=image or k8s.DEFAULT_IMAGE)
    for path in k8s.write(files, folder):
        console.print(f"wrote {path}")
    console.print(f"apply with: kubectl apply -k {folder}")
