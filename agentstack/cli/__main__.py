from agentstack.cli import main

main()
