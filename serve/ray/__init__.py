"""`serve ray`: `job` is the command line and the driver, `data` the Ray Data ends, `cluster` which Ray to use."""
