"""authproxy on Kubernetes: the EmbeddedAuthServer resource and the objects it renders.

``resource`` reads a resource (its names, its Secret references); ``configuration`` turns it
into authproxy's TOML configuration; ``render`` turns it into the ConfigMap, Deployment (or
the patch for an existing MCP server Deployment) and Service that run it. The CRD itself is
etc/kubernetes/crd/embeddedauthservers.yaml.
"""
