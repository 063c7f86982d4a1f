"""Programs on a host: build dependencies, upload and build (content-hash cache), NGINX/HAProxy peers."""
