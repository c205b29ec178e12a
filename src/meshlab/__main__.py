from meshlab.entry import main

main()
