"""Writing the Gradient Bank: every passage's gradient into a store, in one process (encode.py) or on a
Ray cluster (encode_ray.py). `regrad encode` runs them."""
