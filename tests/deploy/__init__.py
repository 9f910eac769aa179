"""Checks of the deploy assets (compose, images, Kubernetes, Prometheus, Grafana), offline."""
