from sidecar.program import run

run()
