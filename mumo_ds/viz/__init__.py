"""Pictures: stick-figure motion animations and metric / loss plots."""
