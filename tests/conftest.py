"""Shared test set-up: the AWS-on-loopback fixtures (moto_server + lifecycle layer)."""

pytest_plugins = ["tests.aws_fixtures", "tests.pebble_fixtures"]
