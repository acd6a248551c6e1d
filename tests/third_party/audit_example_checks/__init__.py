"""An example third-party check package, installed for the tests as a distribution on
sys.path (see the dist-info folder beside it)."""
