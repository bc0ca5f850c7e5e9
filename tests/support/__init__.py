"""Helpers shared by the test tiers (fixtures that start real services: a registry, a guest agent, a VM)."""
