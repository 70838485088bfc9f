"""packetdrill scripts over a real wire against any target: see README.md in this folder."""
