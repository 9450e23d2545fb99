"""Config revisions keep their secrets encrypted (`secrets_enc`), no longer as plaintext in `config_json`."""

import json

from django.db import migrations, models


def move_secrets_out(apps, schema_editor):  # type: ignore[no-untyped-def]
    from manager.proxies.crypto import encrypt
    from manager.proxies.models import split_secrets

    for rev in apps.get_model("proxies", "ConfigRevision").objects.all():
        public, found = split_secrets(json.loads(rev.config_json))
        if found:
            rev.config_json = json.dumps(public, separators=(",", ":"))
            rev.secrets_enc = encrypt(json.dumps(found))
            rev.save(update_fields=["config_json", "secrets_enc"])


class Migration(migrations.Migration):

    dependencies = [
        ("proxies", "0013_changelog_status"),
    ]

    operations = [
        migrations.AddField(
            model_name="configrevision",
            name="secrets_enc",
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.RunPython(move_secrets_out, migrations.RunPython.noop),
    ]
