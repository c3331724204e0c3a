from paddlecls_q.cli import main

main()
