-- Health queries for the demo app: each must return a truthy first value. They run inside
-- the deploy's transaction, after the schema change and before COMMIT: a failure rolls back.
SELECT count(*) >= 0 FROM "User";
SELECT count(*) >= 0 FROM "Transaction" WHERE "portfolioId" NOT IN (SELECT "id" FROM "Portfolio");
SELECT count(*) = 0 FROM "Portfolio" WHERE "userId" NOT IN (SELECT "id" FROM "User");
