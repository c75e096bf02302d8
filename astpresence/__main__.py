from astpresence.cli.main import main

main(prog_name="astpresence")
