-- The demo app's v2 schema: v1 plus a watchlist, a currency per user, a fee per
-- transaction and an update time per portfolio. Everything is additive:
--   "User"."currency"         NOT NULL with a constant default: ADD COLUMN in place
--   "Transaction"."fee"       NOT NULL with a constant default: ADD COLUMN in place
--   "Portfolio"."updatedAt"   DEFAULT CURRENT_TIMESTAMP is not constant: verified rebuild
--   "Watchlist"               a new table, with its index
--   "Transaction_symbol_idx"  a new index
-- CreateTable
CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL, "name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "currency" TEXT NOT NULL DEFAULT 'USD');

-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");

-- CreateTable
CREATE TABLE "Portfolio" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "userId" INTEGER NOT NULL, "name" TEXT NOT NULL, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, CONSTRAINT "Portfolio_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);

-- CreateTable
CREATE TABLE "Transaction" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "portfolioId" INTEGER NOT NULL, "symbol" TEXT NOT NULL, "quantity" REAL NOT NULL, "price" REAL NOT NULL, "executedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "fee" REAL NOT NULL DEFAULT 0, CONSTRAINT "Transaction_portfolioId_fkey" FOREIGN KEY ("portfolioId") REFERENCES "Portfolio" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);

-- CreateIndex
CREATE INDEX "Transaction_portfolioId_idx" ON "Transaction"("portfolioId");

-- CreateIndex
CREATE INDEX "Transaction_symbol_idx" ON "Transaction"("symbol");

-- CreateTable
CREATE TABLE "Watchlist" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "userId" INTEGER NOT NULL, "symbol" TEXT NOT NULL, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, CONSTRAINT "Watchlist_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);

-- CreateIndex
CREATE UNIQUE INDEX "Watchlist_userId_symbol_key" ON "Watchlist"("userId", "symbol");
