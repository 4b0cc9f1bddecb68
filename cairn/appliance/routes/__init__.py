"""The REST API's areas, one APIRouter each, included by `cairn.appliance.app.create_app`."""
