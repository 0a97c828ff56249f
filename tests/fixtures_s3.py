"""S3 fixtures (moto's standalone server on 127.0.0.1); filled in by the S3 work."""
