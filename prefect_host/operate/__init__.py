"""Operating a running host from the laptop: `prefect-host status` and `prefect-host backup`."""
