from imagefleet.cli import main

main()
