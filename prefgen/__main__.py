from prefgen.cli import app

app()
