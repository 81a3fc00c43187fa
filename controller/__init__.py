"""Control plane: sources, inventory, snapshots, releases, leader election, operator API."""
