"""Model families; importing this package registers them all."""
from zoo.models import cnns, densenet, lstm, mlp  # noqa: F401
