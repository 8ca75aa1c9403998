import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import require_shared  # noqa: E402  (after the path insert)


@pytest.fixture(autouse=True)
def _shared_gate(request):
    """Tests marked ``needs_shared`` skip without ../shared, and fail under POLICYC_REQUIRE_SHARED=1."""
    if request.node.get_closest_marker("needs_shared"):
        require_shared()
