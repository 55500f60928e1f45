"""Quality assurance: overlays, contact sheets, build report."""
