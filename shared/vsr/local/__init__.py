"""The embedded local AWS: moto server, resources as Terraform creates them, Lambda-like dispatchers (`vsr run`)."""
