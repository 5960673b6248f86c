"""Facts of one test session that fixtures and tests share."""

import uuid

#: Every process the fixtures start carries this marker, so teardown can prove none is left.
MARKER = f"pytest-{uuid.uuid4().hex}"
