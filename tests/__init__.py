import pytest

# The shared helpers' assertions fail with pytest's explanations, as the test modules' do.
pytest.register_assert_rewrite("tests.support")
