"""OCI images from slugs: references, registry credentials, a registry client.

docs/images.md describes what users see; ``reference`` parses where an image
goes, ``credentials`` finds how to log in there, ``registry`` speaks the
distribution API.
"""
