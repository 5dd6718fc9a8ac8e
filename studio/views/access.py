"""One access helper per resource: the object if the user may see it, else 404."""

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from studio.models import WRITE_ROLES, ApiKey


def get_key_for_user(user, key_id: int, *, write: bool = False) -> ApiKey:
    """The active key `key_id` in a project the user imported (annotated with `role`).

    Keys of other users' projects are 404. A viewer asking to change a key gets 403: they may
    see that it exists.
    """
    key = get_object_or_404(ApiKey.objects.visible_to(user), pk=key_id)
    if write and key.role not in WRITE_ROLES:
        raise PermissionDenied
    return key
