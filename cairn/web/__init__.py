"""The web console: server-rendered pages at ``/`` on the appliance, beside the REST API.

Pages are Jinja2 templates with a little plain JavaScript where they update live (no build
step). Users log in with the accounts `cairn users` manages; every action calls the same
library functions as the CLI and the API. `console.install` adds it to the appliance app.
"""
