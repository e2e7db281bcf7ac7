"""Images every host can provide without a catalog entry."""

BUILTIN_IMAGES: tuple[str, ...] = ("tiny",)
