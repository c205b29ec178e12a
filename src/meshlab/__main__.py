from meshlab.cli import main

main(prog_name="meshlab")
