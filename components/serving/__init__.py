"""Serving components: the KubeRay operator and one RayService-backed inference cluster per use case.

The Serve config they deploy is built by the `serving` domain package (`serving.builder`).
"""
