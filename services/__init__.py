"""active-stream: Kafka-native active learning (see README.md)."""

from importlib import metadata


def service_version() -> str:
    """The installed package version, written into dead letters; "0+unknown" from a bare tree."""
    try:
        return metadata.version("active-stream")
    except metadata.PackageNotFoundError:
        return "0+unknown"
