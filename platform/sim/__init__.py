"""The simulator: lane geometry, the vectorized World with IDM/MOBIL traffic, collisions, V2V comms,
scenario episodes, observations and rendering."""
