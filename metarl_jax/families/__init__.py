"""The shipped task families; importing this package registers them."""
