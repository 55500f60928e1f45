"""The bridge from prefect.yaml to a serving process: ``medpclip serve`` serves the deployments that
``prefect deploy`` would register, from the same file, so the two ways to run flows cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent


class DeploymentError(ValueError):
    """prefect.yaml is missing or names a flow that cannot be loaded."""


def load_deployments(project: Path | None = None) -> list:
    """RunnerDeployments for every entry of ``prefect.yaml`` (name, entrypoint, parameters, tags, description)."""
    from prefect.flows import load_flow_from_entrypoint

    project = Path(project or PROJECT_DIR).resolve()
    config_path = project / "prefect.yaml"
    if not config_path.is_file():
        raise DeploymentError(f"no prefect.yaml in {project} (pass --project DIR)")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    deployments = []
    for entry in config.get("deployments") or []:
        path, _, func = entry["entrypoint"].partition(":")
        try:
            flow = load_flow_from_entrypoint(f"{project / path}:{func}")
        except Exception as e:  # noqa: BLE001 — any import failure is the same user error: a bad entrypoint
            raise DeploymentError(
                f"deployment '{entry.get('name')}': cannot load {entry['entrypoint']}: {e}"
            ) from None
        deployments.append(
            flow.to_deployment(
                name=entry["name"],
                parameters=entry.get("parameters") or {},
                description=entry.get("description"),
                tags=entry.get("tags"),
            )
        )
    if not deployments:
        raise DeploymentError(f"{config_path} has no deployments")
    return deployments


def serve_deployments(project: Path | None = None) -> None:
    """Block serving the deployments; flow runs execute in subprocesses of this process."""
    from prefect import serve

    serve(*load_deployments(project))
