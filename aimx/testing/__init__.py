"""Test support shipped with the package: the fakes the test suite shares."""
