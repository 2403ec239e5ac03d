"""The SDK: what pipeline authors import (``@step``, ``@pipeline``, ``container_step``)."""
