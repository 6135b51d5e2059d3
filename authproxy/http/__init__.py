"""HTTP plumbing: the Site, its channel, routing, responses and pages."""
