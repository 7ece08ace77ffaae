"""Root conftest: every test directory gets the nyx test kit (fixtures, leak check).

pytest only honours ``pytest_plugins`` here, in the root conftest: sub-directory conftests
must not declare it again.
"""

pytest_plugins = ["nyx_core.testing"]
