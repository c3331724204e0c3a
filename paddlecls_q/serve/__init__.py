"""Online serving (Ray Serve) and offline batch inference (Ray Data); Ray is the optional `[serve]` extra."""
