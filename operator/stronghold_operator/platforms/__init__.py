"""The only code that talks to the Kubernetes or Docker APIs."""
