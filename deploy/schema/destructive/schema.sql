-- A desired schema that would destroy data if it were executed: v1 without "User"."name",
-- without the "Transaction" table (and its index), and with "Portfolio"."name" changed from
-- TEXT to INTEGER. The sidecar reports every one of these as drift and never executes them;
-- with --strict the deploy fails (exit 3) instead.
CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);

CREATE UNIQUE INDEX "User_email_key" ON "User"("email");

CREATE TABLE "Portfolio" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "userId" INTEGER NOT NULL, "name" INTEGER NOT NULL, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, CONSTRAINT "Portfolio_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);
