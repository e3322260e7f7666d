"""Uploads from a browser or an app: the HTTP API and the static page that uses it.

- `api`: the API as pure functions: a `Request` in, a `Response` out, every AWS call behind the `Backend`
  protocol (validation, keys, views, pagination; unit-tested with a fake backend);
- `backend`: the `Backend` on S3 and DynamoDB (presigned URLs, upload records, job reads);
- `lambda_api`: API Gateway (HTTP API, payload 2.0, Cognito JWT authorizer) events -> `api.handle`;
- `local`: the same API and the page on loopback for `vsr serve --web-port` (one local user, no sign-in);
- `static/`: the page (plain HTML, CSS and JS; no build step).

See docs/web.md.
"""
