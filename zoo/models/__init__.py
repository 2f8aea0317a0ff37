"""Model families: every module here registers its builders (``zoo.registry.MODELS`` imports them all)."""
