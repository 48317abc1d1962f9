"""imagegate: a self-hosted gateway for image-generation APIs."""
