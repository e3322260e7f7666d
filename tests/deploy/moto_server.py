"""`python -m moto.server` for the Terraform applies, with the fixes to moto that the AWS provider needs.

Each fix makes moto answer as AWS does where the provider depends on it; nothing else about moto changes:
- ECS: DescribeServices for a service without an awsvpc network configuration (bridge networking, as the GPU
  worker service uses) answers `"networkConfiguration": {}`, where ECS leaves the field out; the AWS provider
  5.x then dereferences the missing awsvpcConfiguration and crashes. The fix drops the empty object.
- Application Auto Scaling: moto has no TagResource / UntagResource / ListTagsForResource (HTTP 500) and drops
  the Tags of RegisterScalableTarget, and the provider reads a scalable target's tags after creating it (the
  stack's default tags). The fix keeps tags per ARN in memory.
The server process also loads AWS managed IAM policies (MOTO_IAM_LOAD_MANAGED_POLICIES, set by the caller).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import moto.applicationautoscaling.responses
import moto.ecs.models
import moto.server


def _without_empty_network_configuration() -> None:
    service = moto.ecs.models.Service
    original = service.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not self.network_configuration:
            self.network_configuration = None

    service.__init__ = init  # type: ignore[method-assign]


def _scalable_target_tags() -> None:
    response = moto.applicationautoscaling.responses.ApplicationAutoScalingResponse
    tags: dict[str, dict[str, str]] = {}
    register = response.register_scalable_target

    def register_scalable_target(self: Any) -> str:
        body = register(self)
        tags.setdefault(json.loads(body)["ScalableTargetARN"], {}).update(self._get_param("Tags") or {})
        return body

    def tag_resource(self: Any) -> str:
        tags.setdefault(self._get_param("ResourceARN"), {}).update(self._get_param("Tags") or {})
        return "{}"

    def untag_resource(self: Any) -> str:
        held = tags.setdefault(self._get_param("ResourceARN"), {})
        for key in self._get_param("TagKeys") or []:
            held.pop(key, None)
        return "{}"

    def list_tags_for_resource(self: Any) -> str:
        return json.dumps({"Tags": tags.get(self._get_param("ResourceARN"), {})})

    response.register_scalable_target = register_scalable_target  # type: ignore[method-assign]
    response.tag_resource = tag_resource  # type: ignore[attr-defined]
    response.untag_resource = untag_resource  # type: ignore[attr-defined]
    response.list_tags_for_resource = list_tags_for_resource  # type: ignore[attr-defined]


if __name__ == "__main__":
    _without_empty_network_configuration()
    _scalable_target_tags()
    moto.server.main(sys.argv[1:])
