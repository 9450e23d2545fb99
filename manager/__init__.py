"""The pforte manager: Django project where hosting admins configure proxies and instances."""
