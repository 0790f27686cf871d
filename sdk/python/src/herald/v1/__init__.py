"""Generated from proto/herald/v1 by scripts/gen_proto.py: do not edit."""
