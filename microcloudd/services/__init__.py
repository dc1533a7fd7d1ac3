"""Services compose the drivers and the database: each request's desired state is
recorded first, then realised by idempotent steps under a reverter."""
