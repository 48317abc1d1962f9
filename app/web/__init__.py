"""HTTP plumbing shared by the features: dependencies, middleware, health."""
