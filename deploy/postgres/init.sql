-- docker-compose only: the databases `make up` creates in the project's own cluster.
CREATE DATABASE tally_invoicing OWNER tally;
